# A Nomad job whose task gets its secrets from dso on the client: the job spec holds only
# references, never values.
job "app" {
  datacenters = ["dc1"]

  group "app" {
    task "db" {
      driver = "docker"

      config {
        image   = "postgres:16"
        runtime = "dso"   # allowed by allow_runtimes in the client's docker plugin config
      }

      env {
        POSTGRES_PASSWORD_FILE = "dsofile://db_password"
        API_KEY                = "dso://api_key"
      }
    }
  }
}
