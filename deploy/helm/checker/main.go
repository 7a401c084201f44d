// Command checker decodes every object of rendered Kubernetes manifests strictly into the
// API types of k8s.io/api (unknown and duplicate fields refused) and checks the chart's own
// security invariants on every pod template. It reads the files named on the command line
// (or standard input), each a stream of YAML documents such as `helm template` writes.
//
// Exit status: 0 when every object passed, 1 when any failed (each failure is printed with
// the file, the document's index and the object's kind and name), 2 on a usage error.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stderr, "usage: checker [MANIFEST.yaml ...]   (default: standard input)")
		return 2
	}
	sources := map[string]io.Reader{}
	order := []string{}
	if len(args) == 0 {
		sources["<stdin>"] = stdin
		order = append(order, "<stdin>")
	}
	for _, path := range args {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintf(stderr, "checker: %v\n", err)
			return 2
		}
		defer f.Close()
		sources[path] = f
		order = append(order, path)
	}
	failed := 0
	checked := 0
	for _, name := range order {
		results, err := CheckStream(sources[name])
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			failed++
			continue
		}
		for _, r := range results {
			checked++
			if len(r.Problems) == 0 {
				continue
			}
			failed++
			for _, p := range r.Problems {
				fmt.Fprintf(stderr, "%s: document %d (%s %s): %s\n", name, r.Index, r.Kind, r.Name, p)
			}
		}
	}
	fmt.Fprintf(stdout, "checked %d objects, %d failed\n", checked, failed)
	if failed > 0 {
		return 1
	}
	return 0
}
