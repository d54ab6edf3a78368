// The application's own engine/errors.h, on the consumer's include path ahead of ringmux's
// headers: an installed ringmux header that reached for "engine/errors.h" would find this
// file. main.cpp checks that none did.
#pragma once

#define CONSUMER_OWN_ENGINE_ERRORS_H 1

namespace consumer::engine {

enum class Error { none, disk_full };

}  // namespace consumer::engine
