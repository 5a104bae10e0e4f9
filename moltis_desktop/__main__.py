"""Run the `moltis` CLI with `python -m moltis_desktop`."""

from moltis_desktop.cli import main

raise SystemExit(main())
