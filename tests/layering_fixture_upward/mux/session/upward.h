// A fixture for tests/check_layering.sh: the sans-I/O session including the link above
// it (and the engine) must be rejected.
#pragma once

#include "ringmux/engine/loop.h"
#include "ringmux/mux/link/connection.h"
