import sys

from recvos.cli.main import main

sys.exit(main())
