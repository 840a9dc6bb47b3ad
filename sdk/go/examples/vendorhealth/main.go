// Command vendorhealth is an example remote plugin: the vendor health rule
// of examples/vendor-plugin (Rust), out of process. A node agent publishes
// `vendor.example.com/health: ok | degraded | failed` on each node; the
// plugin filters out failed nodes and scores degraded ones below healthy
// ones (pluginConfig arg `degradedScore`, default 20).
//
//	vendorhealth -listen unix:///run/vendorhealth.sock
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	strata "strata.io/sdk/go"
	pb "strata.io/sdk/go/pluginv1"
)

const healthKey = "vendor.example.com/health"

type args struct {
	DegradedScore *int64 `json:"degradedScore"`
}

func main() {
	listen := flag.String("listen", "unix:///tmp/vendorhealth.sock", "unix:///path or host:port")
	flag.Parse()

	var degraded atomic.Int64
	degraded.Store(20)
	plugin := &strata.Plugin{
		// The rule reads only the node's annotation.
		NodeLocal: true,
		Configure: func(profile string, raw json.RawMessage) error {
			var a args
			if len(raw) > 0 {
				if err := json.Unmarshal(raw, &a); err != nil {
					return fmt.Errorf("args: %w", err)
				}
			}
			if a.DegradedScore != nil {
				if *a.DegradedScore < 0 || *a.DegradedScore > strata.MaxNodeScore {
					return fmt.Errorf("degradedScore: %d is not within 0..=100", *a.DegradedScore)
				}
				degraded.Store(*a.DegradedScore)
			}
			log.Printf("configured for profile %s: degradedScore %d", profile, degraded.Load())
			return nil
		},
		Filter: func(_ *pb.Pod, node *pb.Node) string {
			if node.GetAnnotations()[healthKey] == "failed" {
				return "node(s) reported failed by the vendor agent"
			}
			return ""
		},
		Score: func(_ *pb.Pod, node *pb.Node) int64 {
			switch node.GetAnnotations()[healthKey] {
			case "ok", "":
				return strata.MaxNodeScore
			case "failed":
				return 0
			default:
				return degraded.Load()
			}
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Printf("vendorhealth listening on %s", *listen)
	if err := strata.Serve(ctx, *listen, plugin); err != nil {
		log.Fatal(err)
	}
}
