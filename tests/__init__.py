"""The test suite. Its folders mirror the packages, so a module's test is found by its path:
``tests/client`` tests ``client/styleserve``, ``tests/server`` ``server/styleserve_server`` (and
``tests/server/engine`` its engine), ``tests/model_export`` ``model_export/styleserve_export``;
``deploy``, ``reliability`` and ``benchmarks`` test what no one module owns. Every folder is a
package, so two folders may each hold a ``test_jobs.py`` and helpers import by their path."""
