// Prints Kafka's murmur2 and default partition for test keys, from the real kafka-clients jar:
//   jshell --class-path "$HOME/.cache/meshchat/kafka-4.1.1/libs/*" scripts/murmur2-vectors.jsh
import org.apache.kafka.common.utils.Utils;
for (String k : new String[]{"21", "foobar", "a-little-bit-long-string", "a-little-bit-longer-string",
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", "abc", "", "conv-123"}) {
    byte[] b = k.getBytes(java.nio.charset.StandardCharsets.UTF_8);
    System.out.println("\"" + k + "\" " + Utils.murmur2(b) + " p24=" + (Utils.toPositive(Utils.murmur2(b)) % 24));
}
/exit
