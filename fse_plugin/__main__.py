from fse_plugin.cli import main

raise SystemExit(main())
