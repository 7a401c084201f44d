module nexus.local/bench-openloop

go 1.22
