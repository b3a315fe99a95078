from natinv.cli import main

raise SystemExit(main())
