"""Build the ringserve package: pure Python plus the _ringserve C extension, linked
statically against libringserve.a from the ringserve build folder.

    make -C ../.. all            # builds build/libringserve.a
    pip install --no-build-isolation client-lib/python

RINGSERVE_BUILD names another build folder (default: build/ at the top of the tree).
Nothing is downloaded: setuptools comes from Debian (python3-setuptools)."""
import os

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD = os.path.abspath(os.environ.get("RINGSERVE_BUILD", os.path.join(TOP, "build")))
LIBRARY = os.path.join(BUILD, "libringserve.a")

if not os.path.exists(LIBRARY):
    raise SystemExit(f"ringserve: {LIBRARY} is missing: run `make all` at {TOP} first "
                     "(or set RINGSERVE_BUILD to a build folder)")

setup(
    name="ringserve",
    version="0.1.0",
    description="Python client for ringserved, the shared-memory LLM serving daemon",
    packages=["ringserve"],
    python_requires=">=3.9",
    ext_modules=[
        Extension(
            "ringserve._ringserve",
            sources=["src/_ringserve.c"],
            include_dirs=[TOP],
            extra_objects=[LIBRARY],
            extra_compile_args=["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            libraries=["pthread"],
            depends=[LIBRARY, os.path.join(TOP, "client-lib", "ringserve.h")],
        )
    ],
)
