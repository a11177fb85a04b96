"""Starting workers: K per GPU or N on the CPU of this machine (:mod:`.local`), or as a Slurm
job (:mod:`.slurm`). A launcher starts processes; a worker (:mod:`depthsearch.worker`) is one
and starts none. Kubernetes' pods are manifests in ``deploy/``.

Imported module by module, so this package file imports nothing.
"""
