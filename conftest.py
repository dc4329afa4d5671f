# Root conftest: keep doctest collection away from the console-script entry points.
collect_ignore_glob = ["pets/__main__.py", "pets/cli/__main__.py"]
