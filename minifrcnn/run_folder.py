"""One training run per folder: the run folder's lock.

Two `train` commands writing into the same --out would leave a model from one and a log from
the other. So a run holds its folder's lock file, RUN_DIR/.lock (the pid and host of the
holder), for as long as it writes there; a second run refuses, naming the lock and the process.

    with run_folder_lock("runs/shapes"):
        ...                                  # train, save, evaluate: nobody else writes here
"""
import contextlib
import json
import os
import socket

LOCK_FILE = ".lock"


class RunFolderLocked(ValueError):
    """Another process is training into the same run folder; the message names it."""


_HELD_LOCKS = {}          # real path of a run folder -> how many `with`s of this process hold it


@contextlib.contextmanager
def run_folder_lock(out_dir, log=print):
    """Hold the lock of the run folder out_dir (made if missing) for the `with` block.

    Two runs writing into one folder would leave a model from one and a log from the other,
    so the folder gets a lock file, out_dir/.lock, holding {"pid": ..., "host": ...} of its
    holder. os.open with O_CREAT | O_EXCL creates it atomically: of two processes trying at
    once, exactly one succeeds; the other raises RunFolderLocked, one line naming the lock file
    and the process holding it. A lock whose process no longer runs on this host (killed with
    SIGKILL, a power cut) is taken over, with a note (two processes taking over the same
    stale lock at the same instant could both succeed: rare enough to accept here). The lock
    file is removed when the block ends, however it ends (an error, Ctrl-C, SIGTERM), and so
    is the folder if the lock made it and nothing was written into it.

    Re-entrant within a process: the command line holds the lock around train(), and train()
    takes it again (alternating training: around each step's folder as well).
    """
    key = os.path.realpath(out_dir)
    lock_path = os.path.join(out_dir, LOCK_FILE)
    made = False                             # whether this lock made the folder
    if key not in _HELD_LOCKS:
        made = not os.path.isdir(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        _take_lock(out_dir, lock_path, log)
    _HELD_LOCKS[key] = _HELD_LOCKS.get(key, 0) + 1
    try:
        yield
    finally:
        _HELD_LOCKS[key] -= 1
        if _HELD_LOCKS[key] == 0:
            del _HELD_LOCKS[key]
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock_path)
            if made and not os.listdir(out_dir):
                os.rmdir(out_dir)            # a run that stopped before writing leaves nothing


def _take_lock(out_dir, lock_path, log):
    """Create lock_path holding this process's pid and host, taking over a stale one."""
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _lock_holder(lock_path)
            if holder is None and not os.path.exists(lock_path):
                continue                               # released meanwhile: try again
            if not _is_stale(holder):
                raise RunFolderLocked(_locked_message(out_dir, lock_path, holder)) from None
            log(f"note: {lock_path}: taking over the lock of process {holder['pid']} on "
                f"{holder['host']}, which no longer runs")
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock_path)
            continue                                   # and try to create it again
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
        return


def _locked_message(out_dir, lock_path, holder):
    """The one line of RunFolderLocked; where the holder cannot be checked, how to clear it."""
    if holder is None:
        who = "an unknown process: the lock file is empty or damaged"
    else:
        who = f"process {holder['pid']} on {holder['host']}"
    checked = holder is not None and holder["host"] == socket.gethostname()
    return (f"{out_dir}: another training run is using this folder ({who}; lock file "
            f"{lock_path}); wait for it to finish or choose another folder"
            + ("" if checked else f"; if that run has ended, delete {lock_path}"))


def _lock_holder(lock_path):
    """{"pid", "host"} from a lock file; None if it cannot be read (empty, damaged, gone)."""
    try:
        with open(lock_path) as f:
            holder = json.load(f)
        return {"pid": int(holder["pid"]), "host": str(holder["host"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_stale(holder):
    """Whether a lock's process is known to be gone: only a process of this host can be
    checked. A lock of this process's pid that this process does not hold was left by an
    earlier process with the same pid (a container restarts with the same pids)."""
    if holder is None or holder["host"] != socket.gethostname():
        return False
    if holder["pid"] == os.getpid():
        return True
    try:
        os.kill(holder["pid"], 0)          # signal 0 sends nothing: it asks whether pid exists
    except ProcessLookupError:
        return True
    except PermissionError:
        pass                               # it exists, run by another user
    return False
