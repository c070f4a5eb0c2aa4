# Local run: print every flow report on stdout, nothing else (no Kubernetes, no OTLP).
#   sudo mermin run --config examples/stdout.hcl
log_level = "info"

discovery "instrument" {
  interfaces = ["veth*", "lo", "eth*", "en*"]
}

attributes {} # no Kubernetes attribution

span {
  max_record_interval = "10s"
  icmp_timeout        = "5s"
}

export "traces" {
  stdout = {
    format = "text" # text | json
  }
}

internal "metrics" {
  enabled = false
}

internal "server" {
  enabled = false
}
