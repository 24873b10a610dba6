from urr.cli import main

raise SystemExit(main())
