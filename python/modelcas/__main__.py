from modelcas.cli import main

raise SystemExit(main())
