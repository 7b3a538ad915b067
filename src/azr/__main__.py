from azr.cli import entry

raise SystemExit(entry())
