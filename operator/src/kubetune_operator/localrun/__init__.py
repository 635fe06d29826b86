"""Running kubetune without a cluster: pods as local processes (`pod`), Jobs as local pod sets (`kubelet`)."""
