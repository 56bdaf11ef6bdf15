package redis_test

import (
	"testing"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/storetest"
)

// The conformance suite and the property tests, on a standalone server and
// on a 3-master cluster.
func TestConformance(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) floodgate.Store { return newStore(t, topo) })
		})
	}
}

func TestProperties(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo, func(t *testing.T) {
			storetest.RunProperties(t, func(t *testing.T) floodgate.Store { return newStore(t, topo) }, 500)
		})
	}
}
