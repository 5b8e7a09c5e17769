# Nomad client: let the docker driver use dockerd's `dso` runtime (registered with
# `dso install` on every client). Merge into the client's configuration and restart Nomad.
plugin "docker" {
  config {
    allow_runtimes = ["runc", "dso"]
  }
}
