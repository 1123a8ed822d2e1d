from loratui.cli import main

raise SystemExit(main())
