"""The Prometheus/Grafana stack beside the app, on each host.

Pure parts compute text and argv lists; one runner executes them over SSH:

- ``settings.py``   the resolved view of ``[monitoring]`` for one host (paths, ports, URLs)
- ``render.py``     prometheus.yml, rules, alertmanager.yml, blackbox.yml, Grafana files
                    from the packaged templates in ``ferry/assets/monitoring`` (pure)
- ``targets.py``    the app's scrape targets (both colours, labelled colour/release/role)
- ``dashboards.py`` Grafana dashboards generated from Python (grafana-foundation-sdk)
- ``events.py``     ``ferry_deploy_*`` metrics in the node_exporter textfile format + the writer
                    the deployer calls
- ``stack.py``      one container per component: the exact ``docker run`` argv (pure)
- ``runner.py``     ``up | down | status | open`` over Fabric
- ``images.py``     the component images, built from Debian's binaries with ferry's layers
"""
