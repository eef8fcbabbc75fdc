"""``providers``: what is installed, what each model honours and costs, and which keys are present.

Credentials are reported by env var name and presence only; a value is never read into the output.
"""

from __future__ import annotations

import anyio
import typer
from rich.text import Text

from .helptext import PlainCommand
from .options import ConfigOpt, JsonOpt, SandboxOpt, WideOpt
from .payloads import plugin_errors, provider_rows, storage_rows
from .render import Ui, providers_tables
from .session import ClientOptions, open_session

__all__ = ["providers_command", "register"]


def register(app: typer.Typer) -> None:
    app.command("providers", cls=PlainCommand)(providers_command)


def providers_command(
    wide: WideOpt = False, as_json: JsonOpt = False, sandbox: SandboxOpt = False, config: ConfigOpt = None
) -> None:
    """Installed providers, models, prices and keys.

    One row per model: the options it honours, its price, the credential variable (found or missing,
    never its value) and the plugin that registered it; then the storages and any plugin that failed.
    """
    ui = Ui.create(json_mode=as_json)

    async def go() -> None:
        async with open_session(ClientOptions(config=config, sandbox=sandbox, ephemeral=True)) as session:
            client = session.client
            rows = provider_rows(client)
            storages = storage_rows(client)
            broken = plugin_errors(client)
            if ui.json_mode:
                ui.emit_json(
                    {
                        "providers": [r.payload() for r in rows],
                        "storages": storages,
                        "plugin_errors": broken,
                        "strategy": client.settings.strategy,
                        "config_sources": list(client.settings.source),
                    }
                )
                return
            for table in providers_tables(rows, storages, wide=wide):
                ui.show(table)
            for b in broken:
                ui.show(Text(f"plugin {b['plugin']} ({b['source']}) was skipped: {b['error']}", style="red"))
            sources = ", ".join(client.settings.source) or "defaults"
            ui.say(f"routing strategy {client.settings.strategy!r}; config from {sources}", style="dim")

    anyio.run(go)
