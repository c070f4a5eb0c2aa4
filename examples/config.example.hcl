# Mermin example configuration (HCL): every block, with typical values.
# Validate with `mermin config check examples/config.example.hcl`; print every key with its
# default with `mermin config defaults`. Reference: docs/configuration.md.

log_level        = env("MERMIN_EXAMPLE_LOG_LEVEL", "info") # trace | debug | info | warn | error
log_format       = "text"                                  # text | json
log_color        = false
auto_reload      = true   # re-read this file when it changes (SIGHUP always reloads)
shutdown_timeout = "10s"

pipeline {
  flow_capture {
    flow_stats_capacity  = 65536 # kernel flow map size (flows tracked at once)
    flow_events_capacity = 1024  # accepted, no effect
  }
  flow_producer {
    workers                  = 4 # accepted, no effect
    worker_queue_capacity    = 2048
    flow_store_poll_interval = "1s" # = span.poll_interval
    flow_span_queue_capacity = 16384
  }
  k8s_decorator {
    decorated_span_queue_capacity = 32768
  }
}

parser {
  vxlan_port     = 4789
  geneve_port    = 6081
  wireguard_port = 51820
}

discovery "instrument" {
  # globs and /regex/ patterns; exclusions win
  interfaces               = ["veth*", "cali*", "cilium_*", "lxc*", "/^eni[0-9a-f]+$/"]
  exclude                  = ["veth-test*"]
  auto_discover_interfaces = true
  tcx_order                = "first"
  tc_priority              = 1
}

discovery "informer" "k8s" {
  kubeconfig_path        = ""
  informers_sync_timeout = "30s"
  selectors = [
    { kind = "Pod" },
    { kind = "Service" },
    { kind = "Node" },
    { kind = "Pod", namespaces = ["prod"], match_labels = { tier = "backend" } },
  ]
  owner_relations = {
    max_depth     = 5
    include_kinds = []
    exclude_kinds = []
  }
}

attributes "source" "k8s" {
  extract {
    metadata = ["[*].metadata.name", "[*].metadata.namespace", "[*].metadata.uid"]
  }
}

attributes "destination" "k8s" {
  extract {
    metadata = ["[*].metadata.name", "[*].metadata.namespace", "[*].metadata.uid"]
  }
}

# Drop noise: kubelet health probes, DNS to the node-local cache, and ICMP errors.
filter "source" {
  address = { match = [], not_match = ["169.254.0.0/16"] }
  port    = { match = [], not_match = [] }
}

filter "destination" {
  address = { match = [], not_match = ["169.254.20.10"] }
  port    = { match = [], not_match = ["10250", "10255-10256"] }
}

filter "network" {
  transport       = { match = ["tcp", "udp", "icmp*"], not_match = [] }
  type            = { match = [], not_match = [] }
  interface_name  = { match = [], not_match = ["lo"] }
  interface_index = { match = [], not_match = [] }
  interface_mac   = { match = [], not_match = [] }
}

filter "flow" {
  connection_state = { match = [], not_match = [] }
  tcp_flags_tags   = { match = [], not_match = [] }
  ip_dscp_name     = { match = [], not_match = [] }
  ip_ecn_name      = { match = [], not_match = [] }
  ip_ttl           = { match = [], not_match = [] }
  ip_flow_label    = { match = [], not_match = [] }
  icmp_type_name   = { match = [], not_match = ["destination_unreachable"] }
  icmp_code_name   = { match = [], not_match = [] }
}

span {
  max_record_interval = "60s"
  generic_timeout     = "30s"
  icmp_timeout        = "10s"
  tcp_timeout         = "20s"
  tcp_fin_timeout     = "5s"
  tcp_rst_timeout     = "5s"
  udp_timeout         = "60s"
  community_id_seed   = 0
}

export "traces" {
  stdout = {
    format = "text"
  }
}

internal "metrics" {
  enabled        = true
  listen_address = "0.0.0.0"
  port           = 10250
}

internal "server" {
  enabled        = true
  listen_address = "0.0.0.0"
  port           = 8080
}
