"""Developer sessions: `uv run nox -s tests|lint|docs|bench`.

Each session runs inside the uv workspace environment, so it tests exactly what
`uv sync --all-extras` installs (the core plus every plugin under plugins/).
"""

import nox

nox.options.sessions = ["lint", "tests", "docs"]


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The whole test suite (the README's test command)."""
    session.run("uv", "run", "--all-extras", "pytest", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff over the core, the plugins, the tests and the benchmarks."""
    session.run("uv", "run", "--all-extras", "ruff", "check", *(session.posargs or ["."]))


@nox.session(python=False)
def docs(session: nox.Session) -> None:
    """Build the user documentation with mkdocs; warnings fail the build."""
    session.run("uv", "run", "--all-extras", "mkdocs", "build", "--strict", "-d", "site")


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks against Ray Tune (installs the `bench` group, with Ray)."""
    session.run(
        "uv", "run", "--all-extras", "--group", "bench", "python", "benchmarks/run.py",
        *session.posargs,
    )
