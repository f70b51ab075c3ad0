from vtap.cli import main

raise SystemExit(main())
