"""Built-in provider plugins, registered through the ``lipsyncer`` entry-point group like any third party."""
