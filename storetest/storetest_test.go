package storetest_test

import (
	"testing"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/storetest"
)

func newReference(t *testing.T) floodgate.Store { return storetest.NewReferenceStore() }

// The suite and the properties hold for the reference store, that is, for
// the core's Apply.
func TestReferenceStore(t *testing.T) {
	storetest.Run(t, newReference)
}

func TestReferenceStoreProperties(t *testing.T) {
	storetest.RunProperties(t, newReference, 500)
}
