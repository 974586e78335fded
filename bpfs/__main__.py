from bpfs.cli import main

raise SystemExit(main())
