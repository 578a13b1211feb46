"""One run per run directory: a lock file ``OUTPUT/.lock`` held by the job's rank 0 for as long as it runs.

The lock holds ``{"pid", "host", "started"}`` as JSON and is created with a hard link (atomic, also on NFS), so of two
runs started at once into the same ``--output`` exactly one gets it; the other stops with :class:`RunDirLocked`
naming the holder's PID and host before it has changed anything there. A lock left by a process that no longer
exists (kill -9, a crashed node's restart on the same host) is taken over with a message; a lock from another host
cannot be checked from here, so it is honoured and the message says how to remove it. Taking the lock also removes
the temp files of checkpoint writes that a killed run left behind (no other process can be writing them now).
"""
from __future__ import annotations

import atexit
import glob
import json
import os
import socket
import time
from typing import Optional

from .config import ConfigError

LOCK_NAME = ".lock"


class RunDirLocked(ConfigError):
    """Another live process holds the run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(output: str) -> Optional[dict]:
    """The holder recorded in ``output``'s lock (``{}`` if the file is unreadable), or None when unlocked."""
    try:
        with open(os.path.join(output, LOCK_NAME)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


class RunLock:
    """``acquire()`` on rank 0 before the run writes anything into ``output``; ``release()`` at exit.

    ``notes`` collects what the run should log once its logger exists (a stale lock taken over, temp files removed).
    """

    def __init__(self, output: str):
        self.output = output
        self.path = os.path.join(output, LOCK_NAME)
        self.held = False
        self.notes: list[str] = []

    def acquire(self) -> None:
        os.makedirs(self.output, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        tmp = f"{self.path}.{me['host']}.{me['pid']}"
        with open(tmp, "w") as f:
            json.dump(me, f)
        try:
            for _ in range(3):  # a stale lock taken over by a third process in between: look again
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    break
                except FileExistsError:
                    self._take_over_if_stale(me)
            else:
                raise RunDirLocked(f"--output {self.output} is locked ({self.path}) and the lock keeps changing "
                                   "hands; is another run starting there?")
        finally:
            os.remove(tmp)
        self._remove_orphans()

    def _take_over_if_stale(self, me: dict) -> None:
        holder = read_lock(self.output)
        if holder is None:  # released meanwhile
            return
        pid, host = holder.get("pid"), holder.get("host")
        if not isinstance(pid, int) or not isinstance(host, str):
            # a lock file that is not ours (empty, hand-made): treat as stale only if it is older than a minute,
            # since a holder may be between creating and filling it
            try:
                age = time.time() - os.path.getmtime(self.path)
            except FileNotFoundError:
                return
            if age < 60:
                raise RunDirLocked(f"--output {self.output} is locked by an unreadable lock file {self.path} "
                                   "written moments ago; wait, or use another --output")
            who = "an unreadable lock file"
        elif host != me["host"]:
            raise RunDirLocked(f"--output {self.output} is in use by PID {pid} on host {host} (since "
                               f"{holder.get('started', '?')}); wait for that run, use another --output, or delete "
                               f"{self.path} if that process is gone")
        elif pid == me["pid"] or _pid_alive(pid):
            raise RunDirLocked(f"--output {self.output} is in use by PID {pid} on host {host} (since "
                               f"{holder.get('started', '?')}); wait for that run or use another --output")
        else:
            who = f"PID {pid} on host {host}, which no longer runs"
        stale = f"{self.path}.stale.{me['pid']}"
        try:
            os.rename(self.path, stale)  # only one of several takers wins this rename
        except FileNotFoundError:
            return
        os.remove(stale)
        self.notes.append(f"took over the stale lock of {self.output} left by {who}")

    def _remove_orphans(self) -> None:
        """Temp files of checkpoint writes cut off by a kill (``NAME.pt.tmp.PID``)."""
        out = glob.escape(self.output)
        for tmp in sorted(glob.glob(os.path.join(out, "*.tmp.*")) + glob.glob(os.path.join(out, "rollback", "*.tmp.*"))):
            try:
                os.remove(tmp)
                self.notes.append(f"removed {tmp}, the temp file of a write cut off by an earlier run's end")
            except OSError:
                pass

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = read_lock(self.output)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


def lock_run_dir(output: Optional[str], info) -> Optional[RunLock]:
    """Rank 0 takes ``output``'s lock; every rank learns whether it did (one small collective), so that all of them
    stop with the holder's name when the directory is in use. None when there is nothing to lock."""
    from .distributed import any_rank
    lock, message = None, None
    if output is not None and info.is_main:
        lock = RunLock(output)
        try:
            lock.acquire()
        except ConfigError as e:
            lock, message = None, str(e)
        except OSError as e:
            lock, message = None, f"--output {output} cannot be created or written: {e.strerror or e}"
        if lock is not None:  # also when the run fails before its own release
            atexit.register(lock.release)
    if any_rank(message is not None, info):
        raise RunDirLocked(message or f"rank 0 could not lock the run directory {output} (its log says why)")
    return lock
