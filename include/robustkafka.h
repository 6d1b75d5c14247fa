/**
 * @file robustkafka.h
 * @brief librobustkafka: Apache Kafka made safe by default.
 *
 * The umbrella header. It includes every public header of the library and
 * nothing from GLib or librdkafka; it compiles alone as C99 and as C++.
 */
#ifndef ROBUSTKAFKA_H
#define ROBUSTKAFKA_H

#include "robustkafka/common.h"
#include "robustkafka/event.h"
#include "robustkafka/conf.h"
#include "robustkafka/msgid.h"
#include "robustkafka/registry.h"
#include "robustkafka/producer.h"
#include "robustkafka/consumer.h"
#include "robustkafka/dedup.h"

#endif /* ROBUSTKAFKA_H */
