package memory_test

import (
	"context"
	"fmt"
	"time"

	"github.com/floodgate/floodgate"
	"github.com/floodgate/floodgate/store/memory"
)

// The library on the embedded store: an exact sliding log of 3 per hour.
func Example() {
	store := memory.New(memory.Options{})
	defer store.Close()
	limiter := floodgate.New(store)

	limit := floodgate.Limit{Algorithm: floodgate.SlidingWindowLog, Quota: 3, Window: time.Hour}
	for range 4 {
		res, err := limiter.Allow(context.Background(), "user:42", limit)
		if err != nil {
			fmt.Println("no decision:", err)
			return
		}
		fmt.Println(res.Allowed, res.Remaining)
	}
	// Output:
	// true 2
	// true 1
	// true 0
	// false 0
}
