from azr.cli import main

raise SystemExit(main())
