"""mechgrok: mechanistic interpretability of grokking on modular arithmetic."""

from mechgrok.config import Config
from mechgrok.model import RunInfo, build_model, run_info
from mechgrok.task import OPERATIONS, Split, Task, make_split

__all__ = ["Config", "OPERATIONS", "RunInfo", "Split", "Task", "build_model", "make_split", "run_info"]
