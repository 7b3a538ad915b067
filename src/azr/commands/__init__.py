"""One module per ``azr`` subcommand. Each exposes ``HELP: str``, ``configure(parser)`` and ``run(args) -> int``.

These modules must stay cheap to import: heavy imports (torch, transformers) go inside ``run``.
"""
