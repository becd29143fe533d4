"""User apps for the tests (typed tasks, a plain app), imported by workers and servers."""
