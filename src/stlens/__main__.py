from stlens.cli import main

raise SystemExit(main())
