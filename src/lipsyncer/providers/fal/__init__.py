"""fal's Sync lipsync endpoints as four provider plugins (fal-v3, fal-v2, fal-v2-pro, fal-legacy) and the
``fal-cdn`` storage. Each plugin module is an entry point of its own; they share ``_queue.py``."""

from ._errors import AlreadyCompletedError, RequestNotFoundError

__all__ = ["AlreadyCompletedError", "RequestNotFoundError"]
