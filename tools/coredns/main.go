// Command coredns is CoreDNS with only the plugins the test cluster's DNS uses, built the way
// CoreDNS documents for a custom build: its own Directives (in CoreDNS's order, from
// core/dnsserver/zdirectives.go) and blank imports of those plugins, instead of core/plugin's
// full list (whose cloud DNS plugins carry the AWS, Azure and Google SDKs).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order of core/dnsserver/zdirectives.go, restricted to the plugins imported above.
	dnsserver.Directives = []string{
		"bind", "ready", "health", "errors", "log", "loadbalance", "cache", "kubernetes",
	}
}

func main() {
	coremain.Run()
}
