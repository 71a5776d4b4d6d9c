from detector.app.cli import main

raise SystemExit(main())
