from asyncprof.cli import main

raise SystemExit(main())
