"""cffi build script for fastconv's C kernels (API mode, out-of-line).

setuptools' ``cffi_modules`` execs this file with ``__name__ == "__cffi__"`` and a path relative to
the project root, so: paths stay relative to the root, there are no relative imports, and fastconv
itself is never imported (that would drag numpy and numba into the build environment).

- The sources are every ``csrc/*.c`` (discovered, not listed); the cdef is ``csrc/fastconv.h`` read verbatim: the header every .c includes is the ABI cffi sees,
  so the two cannot drift.
- OpenMP is probed by compiling, linking and *running* a tiny program (scikit-learn's approach);
  ``FASTCONV_NO_OPENMP=1`` forces the serial fallback.
- ``FASTCONV_NATIVE=1`` adds ``-march=native`` (non-portable binaries, opt-in). The default build
  stays portable: every kernel's hot loops are compiled once per vector ISA (``target``
  attributes, csrc/fc_internal.h) and the shape's ``isa`` picks one per call.
- ``FASTCONV_SANITIZE=1`` (or a list: ``address``, ``undefined``, ``address,undefined``) builds our
  C with AddressSanitizer / UndefinedBehaviorSanitizer (``-O1 -g``, no recovery): a debugging build,
  slow, and loadable only with the ASan runtime preloaded.  ``.ci/sanitize`` builds it out of tree
  and runs the tests under it.
- GEMM comes from OpenBLAS in the scipy-openblas32 wheel (a build requirement and a run-time
  dependency; its symbols carry a ``scipy_`` prefix).  No rpath is recorded, since the build
  environment is temporary: fastconv/c/_lib.py imports scipy_openblas32 first, which loads the
  library with RTLD_GLOBAL, and the extension's DT_NEEDED resolves to it by soname.
- A fingerprint (version + hash of csrc/) is baked in as FC_BUILD_INFO; fastconv/c/_lib.py compares
  it at import to catch a stale extension in an editable install.
"""
import hashlib
import os
import re
import subprocess
import sys
import tempfile

from cffi import FFI

CSRC = "csrc"
# -ffp-contract=fast: ISO C mode (-std=c11) otherwise forbids fusing a*b+c into one FMA.
# -fno-math-errno: no errno from math calls; unlike -ffast-math it keeps inf/NaN semantics.
# -fno-tree-loop-distribute-patterns: GCC otherwise turns copy and zeroing loops into memcpy/memset
#   calls, and the kernels' loops copy rows of a few vectors (a 7x7 plane's): a call, a vzeroupper
#   and libc's size dispatch per row were a fifth of a depthwise layer's cycles (AMD EPYC Zen 3).
#   Large buffers are cleared by explicit memset calls, which this leaves alone.
BASE_FLAGS = ["-O3", "-std=c11", "-ffp-contract=fast", "-fno-math-errno", "-fno-tree-loop-distribute-patterns",
              "-Wall", "-Wextra", "-Wconversion"]


def csrc_hash(root=CSRC):
    """SHA-256 over csrc/*.c and *.h (names and contents); _lib.py recomputes the same."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(root)):
        if name.endswith((".c", ".h")):
            digest.update(name.encode())
            with open(os.path.join(root, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


def sources(root=CSRC):
    """Every csrc/*.c, discovered: a new algorithm's .c file is built without editing this list."""
    return sorted(os.path.join(root, name) for name in os.listdir(root) if name.endswith(".c"))


def package_version():
    with open(os.path.join("fastconv", "_version.py")) as f:
        return re.search(r'__version__\s*=\s*"([^"]+)"', f.read()).group(1)


def openmp_works(cc=None):
    """Compile, link and run a `#pragma omp parallel` probe; True only if all three succeed."""
    if os.environ.get("FASTCONV_NO_OPENMP") == "1":
        return False
    cc = cc or os.environ.get("CC", "cc")
    probe = (
        "#include <omp.h>\n#include <stdio.h>\n"
        "int main(void){int n=0;\n#pragma omp parallel reduction(+:n)\nn+=1;\n"
        "printf(\"%d\", n>0 && omp_get_max_threads()>0); return 0;}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "probe.c"), os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(probe)
        try:
            subprocess.run([cc, "-fopenmp", src, "-o", exe], check=True, capture_output=True, timeout=60)
            out = subprocess.run([exe], check=True, capture_output=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return False
        return out.strip() == b"1"


def sanitize_flags(value=None):
    """(compile, link) flags for FASTCONV_SANITIZE: "1" means address,undefined; "" or "0" none.
    -O1 -g and frame pointers give usable reports; -fno-sanitize-recover=all makes UBSan's first
    finding fatal, as ASan's already is.  ASan's check of stack use after return is off in our C:
    it moves locals into "fake stack" frames aligned to 32 bytes only, and the AVX-512 kernels'
    64-byte vector locals then fault on their aligned stores (vmovaps zmm in flat_tile, a SEGV on
    the Xeon that AVX2's 32-byte vectors never met); the kernels return no pointers into their
    stacks."""
    value = os.environ.get("FASTCONV_SANITIZE", "") if value is None else value
    if value in ("", "0"):
        return [], []
    kinds = "address,undefined" if value == "1" else value
    if not re.fullmatch(r"[a-z-]+(,[a-z-]+)*", kinds):
        raise ValueError(f"FASTCONV_SANITIZE={value!r}: expected 1 or a list such as address,undefined")
    sanitize = f"-fsanitize={kinds}"
    no_fake_stack = ["--param=asan-use-after-return=0"] if "address" in kinds.split(",") else []
    return [sanitize, *no_fake_stack, "-fno-omit-frame-pointer", "-fno-sanitize-recover=all", "-g", "-O1"], [sanitize]


def make_ffibuilder():
    with open(os.path.join(CSRC, "fastconv.h")) as f:
        cdef = f.read()
    has_openmp = openmp_works()
    flags = list(BASE_FLAGS)
    link = []
    if has_openmp:
        flags.append("-fopenmp")
        link.append("-fopenmp")
    if os.environ.get("FASTCONV_NATIVE") == "1":
        flags.append("-march=native")
    san_compile, san_link = sanitize_flags()
    flags += san_compile  # last, so its -O1 overrides BASE_FLAGS' -O3
    link += san_link
    info = (f"fastconv {package_version()} csrc:{csrc_hash()} openmp:{int(has_openmp)} "
            f"native:{int(os.environ.get('FASTCONV_NATIVE') == '1')}")
    if san_link:
        info += " sanitize:" + san_link[0].split("=", 1)[1]  # sanitize:address,undefined
    import scipy_openblas32 as openblas  # a build requirement (pyproject.toml)

    builder = FFI()
    builder.cdef(cdef)
    builder.set_source(
        "fastconv._cconv",
        '#include <stdint.h>\n#include "fastconv.h"\n',
        sources=sources(),
        include_dirs=[CSRC, openblas.get_include_dir()],
        library_dirs=[openblas.get_lib_dir()],
        libraries=[openblas.get_library()],
        define_macros=[("FC_BUILD_INFO", '"' + info + '"')],
        extra_compile_args=flags,
        extra_link_args=link,
    )
    return builder


# cffi's setuptools hook accepts a callable here and calls it at build time, so importing this
# module (fastconv.c._lib does, for csrc_hash) probes and compiles nothing.
ffibuilder = make_ffibuilder

if __name__ == "__main__":
    # Quick rebuild in place for development: python fastconv/_build_cffi.py (from the project root).
    make_ffibuilder().compile(tmpdir=".", verbose=True)
    sys.exit(0)
