/**
 * @file robustkafka.h
 * @brief librobustkafka: Apache Kafka made safe by default.
 *
 * The umbrella header. It includes every public header of the library and
 * nothing from GLib; it compiles alone as C99 and as C++.
 */
#ifndef ROBUSTKAFKA_H
#define ROBUSTKAFKA_H

#include "robustkafka/common.h"

#endif /* ROBUSTKAFKA_H */
