# Send flow reports to an OpenTelemetry collector over OTLP/gRPC with TLS and a bearer token
# read from the environment (the token never sits in the file).
#   OTLP_TOKEN=... mermin run --config examples/otlp.hcl

discovery "instrument" {
  interfaces = ["veth*", "cali*", "cilium_*", "lxc*"]
}

export "traces" {
  otlp = {
    endpoint               = env("OTLP_ENDPOINT", "https://otel-collector.observability:4317")
    protocol               = "grpc" # grpc | http_binary
    timeout                = "10s"
    max_batch_size         = 1024
    max_batch_interval     = "2s"
    max_queue_size         = 32768
    max_concurrent_exports = 4
    max_export_timeout     = "10s"

    auth = {
      bearer = env("OTLP_TOKEN", "")
    }

    headers = {
      "x-tenant" = "cluster-a"
    }

    tls = {
      insecure_skip_verify = false
    }
  }
}
