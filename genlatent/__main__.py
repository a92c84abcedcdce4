import os

from genlatent.cli import main

if "TORCHELASTIC_ERROR_FILE" in os.environ:
    # Under torchrun: record an uncaught exception in the file that torchrun
    # reports as the failing rank's root cause.
    from torch.distributed.elastic.multiprocessing.errors import record

    raise SystemExit(record(main)())
raise SystemExit(main())
