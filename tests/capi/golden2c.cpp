// Build-time helper: turns the reference model's golden.json into a C header, so that the C API tests can
// compare against it without a JSON parser of their own.
#include <json/json.h>

#include <cstdio>
#include <fstream>
#include <iostream>

static void print_c_string(const std::string &s) {
    std::printf("\"");
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') std::printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f) std::printf("\\%03o", c);
        else std::printf("%c", c);
    }
    std::printf("\"");
}

static void print_ints(const Json::Value &a) {
    std::printf("{");
    for (Json::ArrayIndex i = 0; i < a.size(); ++i) std::printf("%s%d", i ? "," : "", a[i].asInt());
    if (a.empty()) std::printf("-1");  // C forbids empty initializers; the count says 0
    std::printf("}");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        std::cerr << "usage: golden2c golden.json > golden_data.h\n";
        return 2;
    }
    std::ifstream in(argv[1]);
    Json::Value root;
    Json::CharReaderBuilder b;
    std::string errs;
    if (!in || !Json::parseFromStream(b, in, &root, &errs)) {
        std::cerr << "golden2c: cannot read " << argv[1] << ": " << errs << "\n";
        return 1;
    }
    std::printf("/* generated from golden.json by golden2c: do not edit */\n#include <stdint.h>\n\n");
    const Json::Value &tok = root["tokenize"];
    std::printf("typedef struct { const char *text; int n; int32_t ids[64]; } golden_tok;\n");
    std::printf("static const golden_tok GOLDEN_TOK[] = {\n");
    for (const auto &t : tok) {
        std::printf("  {");
        print_c_string(t["text"].asString());
        std::printf(", %u, ", t["ids"].size());
        print_ints(t["ids"]);
        std::printf("},\n");
    }
    std::printf("};\n#define GOLDEN_N_TOK %u\n\n", tok.size());
    const Json::Value &cases = root["cases"];
    std::printf("typedef struct { const char *prompt; int n_prompt; int32_t prompt_ids[256]; int n_greedy;\n"
                "  int32_t greedy_ids[64]; const char *greedy_text; int n_logits; const float *last_logits; } golden_case;\n");
    for (Json::ArrayIndex i = 0; i < cases.size(); ++i) {
        std::printf("static const float GOLDEN_LOGITS_%u[] = {", i);
        const Json::Value &l = cases[i]["last_logits"];
        for (Json::ArrayIndex j = 0; j < l.size(); ++j) std::printf("%s%.9g", j ? "," : "", l[j].asDouble());
        std::printf("};\n");
    }
    std::printf("static const golden_case GOLDEN_CASES[] = {\n");
    for (Json::ArrayIndex i = 0; i < cases.size(); ++i) {
        const Json::Value &c = cases[i];
        std::printf("  {");
        print_c_string(c["prompt"].asString());
        std::printf(", %u, ", c["prompt_ids"].size());
        print_ints(c["prompt_ids"]);
        std::printf(", %u, ", c["greedy_ids"].size());
        print_ints(c["greedy_ids"]);
        std::printf(", ");
        print_c_string(c["greedy_text"].asString());
        std::printf(", %u, GOLDEN_LOGITS_%u},\n", c["last_logits"].size(), i);
    }
    std::printf("};\n#define GOLDEN_N_CASES %u\n", cases.size());
    return 0;
}
