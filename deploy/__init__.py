"""The same federation across processes, on Flower: one ClientApp per hospital, one ServerApp.

server_app.py / coordinator.py: fed_train.py's server; client_app.py / hospital.py: one
hospital; secagg.py: Flower's SecAgg+ as the round's sum; simulate.py and run_local.sh:
Flower's simulation engine and a deployment on this machine. docs/deploy.md explains it.
"""
