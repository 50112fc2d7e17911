from tune_mtl.cli import main

raise SystemExit(main())
