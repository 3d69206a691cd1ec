from schedd.cli import main

raise SystemExit(main())
