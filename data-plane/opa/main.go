// Command opa is OPA with NexusAI's Envoy ext_authz gRPC plugin registered.
//
// Every OPA subcommand (run, check, test, fmt, build, bench, ...) works as in
// upstream OPA; `opa run --server` additionally accepts the
// `plugins.envoy_ext_authz_grpc` configuration key and the durable decision
// log `plugins.nexus_durable_log` (named by `decision_logs.plugin`).
package main

import (
	"errors"
	"os"

	"github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/v1/runtime"

	"nexus.local/opa-enforcer/durablelog"
	"nexus.local/opa-enforcer/extauthz"
)

func main() {
	runtime.RegisterPlugin(extauthz.PluginName, extauthz.Factory{})
	runtime.RegisterPlugin(durablelog.PluginName, durablelog.Factory{})

	exit := 0
	if err := cmd.RootCommand.Execute(); err != nil {
		exit = 1
		if e, ok := errors.AsType[*cmd.ExitError](err); ok {
			exit = e.Exit
		}
	}
	os.Exit(exit)
}
