"""The dynamic linker's cache (``/etc/ld.so.cache``), made by the image's own ``ldconfig``.

CPython's ``ctypes.util.find_library`` on Linux runs ``/sbin/ldconfig -p`` and reads the
cache (its fallbacks need gcc or ld, which no image has), and so do cffi users: psycopg
without [binary] (libpq), WeasyPrint (pango, cairo), python-magic (libmagic), pyvips. An image
without ``ldconfig`` and a cache finds no library by name, not even ``find_library("c")``.

The cache is made where dpkg's trigger would have made it: by the tree's own ``ldconfig``
(static in every Debian release), run over the assembled tree in bubblewrap as root, no
network (``sandbox.ldconfig_argv``):

    base image (baseimage.build_index)   the platform's tree written to disk (without the
                                         standard library and /usr/share, which ldconfig never
                                         reads), ldconfig run, the cache added to the tree
    packages layer (packages.py)         the base's tree + the packages' tree stacked by
                                         overlayfs (sandbox.command, as image.build), the
                                         cache taken from the overlay's upper directory

The cache records each library's path and ELF flags (``libc6,x86-64``, ``libc6,AArch64``); an
x86-64 ldconfig skips aarch64 libraries without a word (checked: an arm64 tree gives an empty
cache), so the build machine's ldconfig cannot make another architecture's cache. The arm64
tree's own ldconfig runs through qemu-user: registered with binfmt_misc, or else the
``qemu-aarch64-static`` binary given explicitly (copied into the root, so the sandbox needs
nothing from the machine). Without either, the build stops rather than ship a wrong cache.
``-X``: no links are made (the packages ship them); ``-i``: no aux cache read, so the output
depends on the tree alone (built twice: the same bytes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from ..errors import BuildError
from . import rootfs, sandbox

CACHE = "etc/ld.so.cache"
LDCONFIG = "/sbin/ldconfig"
# where the emulator is copied inside the sandbox's root (removed before the tree is read)
EMULATOR_DIR = ".ferry-ldconfig"
QEMU_STATIC = {"amd64": "qemu-x86_64-static", "arm64": "qemu-aarch64-static"}
# what ldconfig never reads: left out of the tree written for it (most of its bytes)
NOT_READ = ("usr/share/", "usr/lib/python3", "usr/include/", "var/lib/dpkg/")


def has_ldconfig(tree: rootfs.Tree) -> bool:
    """Does the tree ship ldconfig (libc-bin's, usr-merged)? (pure)"""
    e = tree.get("usr/sbin/ldconfig") or tree.get("sbin/ldconfig")
    return e is not None and e.kind == rootfs.FILE


def subset(tree: rootfs.Tree) -> rootfs.Tree:
    """The entries ldconfig may read: the libraries, its configuration, itself (pure)."""
    return {p: e for p, e in tree.items() if not any(p.startswith(n) or p + "/" == n for n in NOT_READ)}


def emulator(architecture: str, machine: str, binfmt: dict[str, str], qemu: str | None) -> str | None:
    """How this machine runs an ``architecture`` ldconfig (pure): None directly (its own
    architecture, or qemu-user registered with binfmt_misc), else the qemu-user binary to run
    it with. No way at all is an error: another architecture's cache cannot be made here."""
    if sandbox.can_run(architecture, machine, binfmt):
        return None
    if qemu:
        return qemu
    name = QEMU_STATIC.get(architecture, f"qemu-{architecture}-static")
    raise BuildError(f"the {architecture} image's /etc/ld.so.cache is made by its own ldconfig, and this {machine} "
                     f"machine cannot run {architecture} programs ({name} not found, no binfmt_misc entry)",
                     f"install qemu-user-static (apt-get install qemu-user-static), or build linux/{architecture} "
                     f"on a {architecture} machine, or drop it from the platforms")


def find_qemu(architecture: str, which: Callable[[str], str | None] = shutil.which) -> str | None:
    name = QEMU_STATIC.get(architecture)
    return which(name) if name else None


def command(architecture: str) -> tuple[str, ...]:
    """The argv inside the sandbox: ldconfig, through the copied emulator when one is needed."""
    emu = emulator(architecture, sandbox.machine_architecture(), sandbox.read_binfmt(), find_qemu(architecture))
    return _argv(emu)


def _argv(emu: str | None) -> tuple[str, ...]:
    prefix = (f"/{EMULATOR_DIR}/{os.path.basename(emu)}",) if emu else ()
    return (*prefix, LDCONFIG, "-X", "-i")


def place_emulator(argv: tuple[str, ...], architecture: str, root: Path) -> None:
    """Copy the emulator ``argv`` names into ``root`` (nothing when ldconfig runs directly)."""
    if argv[0] == LDCONFIG:
        return
    qemu = find_qemu(architecture)
    assert qemu, "command() found it"
    dest = root / argv[0].lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(qemu, dest)


def check(proc: subprocess.CompletedProcess, where: str) -> None:
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise BuildError(f"ldconfig over {where} failed (exit {proc.returncode}): {err[-1] if err else 'no output'}",
                         "bubblewrap needs root or unprivileged user namespaces; report the package set if the "
                         "sandbox itself started")


def for_tree(tree: rootfs.Tree, architecture: str, work: Path) -> bytes:
    """The cache for a base's tree: the tree's own ldconfig run over it in bubblewrap."""
    argv = command(architecture)
    bwrap = sandbox.Tools.find_bwrap()
    root = work / f"ldconfig-{architecture}"
    try:
        rootfs.write_tree(subset(tree), root)
        place_emulator(argv, architecture, root)
        proc = subprocess.run(sandbox.ldconfig_argv(bwrap, root, argv), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace",
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        check(proc, f"the {architecture} tree")
        path = root / CACHE
        if not path.is_file():
            raise BuildError(f"ldconfig wrote no /{CACHE} for the {architecture} tree",
                             "report the base recipe; its libc-bin should have /sbin/ldconfig")
        return path.read_bytes()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def with_cache(tree: rootfs.Tree, data: bytes) -> rootfs.Tree:
    """The tree with its cache (pure); 0644 as ldconfig leaves it."""
    return {**tree, CACHE: rootfs.Entry.file(CACHE, data, 0o644)}
