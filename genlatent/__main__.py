from genlatent.cli import main

raise SystemExit(main())
