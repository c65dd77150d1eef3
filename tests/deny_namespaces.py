"""`python tests/deny_namespaces.py PROGRAM ARGS...`: run PROGRAM under a seccomp filter
that refuses unshare, setns and mount with EPERM and clone with namespace flags, as
Docker's default profile does for a container without CAP_SYS_ADMIN."""

from __future__ import annotations

import ctypes
import errno
import os
import sys

_NR = {"x86_64": {"unshare": 272, "setns": 308, "mount": 165, "clone": 56, "clone3": 435}}
_ARCH = {"x86_64": 0xC000003E}
_CLONE_NAMESPACES = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | ...
_LD_W_ABS, _JEQ_K, _JSET_K, _RET_K = 0x20, 0x15, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]  # fmt: skip


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def deny() -> None:
    machine = os.uname().machine
    nr = _NR[machine]
    eperm = _ERRNO | errno.EPERM
    code = [
        (_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, _ARCH[machine]), (_RET_K, 0, 0, _ALLOW),
        (_LD_W_ABS, 0, 0, 0),
        (_JEQ_K, 0, 1, nr["unshare"]), (_RET_K, 0, 0, eperm),
        (_JEQ_K, 0, 1, nr["setns"]), (_RET_K, 0, 0, eperm),
        (_JEQ_K, 0, 1, nr["mount"]), (_RET_K, 0, 0, eperm),
        (_JEQ_K, 0, 1, nr["clone3"]), (_RET_K, 0, 0, _ERRNO | errno.ENOSYS),
        (_JEQ_K, 0, 3, nr["clone"]), (_LD_W_ABS, 0, 0, 16),
        (_JSET_K, 0, 1, _CLONE_NAMESPACES), (_RET_K, 0, 0, eperm),
        (_RET_K, 0, 0, _ALLOW),
    ]  # fmt: skip
    filters = (_Filter * len(code))(*(_Filter(*c) for c in code))
    program = _Program(len(code), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


if __name__ == "__main__":
    deny()
    os.execvp(sys.argv[1], sys.argv[1:])
