from chatapp.launch import main

raise SystemExit(main())
