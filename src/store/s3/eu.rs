//! Which S3 regions are in the European Union, and which endpoint hosts name a region outside it.
//!
//! A region name alone does not say where the data is: it is a label the provider chose. AWS's
//! `eu-central-2` is Zurich (Switzerland) while IONOS uses the same name for Berlin; AWS's
//! `eu-west-2` is London while Wasabi uses it for Paris, and Wasabi's `eu-west-1` is London. So the
//! list below holds only names whose place is in the EU at every provider we know to use them,
//! each with the provider's own documentation as the source, and the names that are known to
//! mean a place outside the EU somewhere are left out (or refused on that provider's hosts).
//! This is deliberately conservative: a name missing here can only be added by changing reversa,
//! never by configuration (`allowed_regions` can only narrow the list).

/// A region whose data stays in the EU: its name, who uses it, and where it is.
pub struct EuRegion {
    pub name: &'static str,
    pub provider: &'static str,
    pub place: &'static str,
}

const fn r(name: &'static str, provider: &'static str, place: &'static str) -> EuRegion {
    EuRegion { name, provider, place }
}

/// The AWS regions in the EU. Not here: eu-west-2 (London) and eu-central-2 (Zurich), which are
/// in Europe but not in the EU.
pub const AWS: &[EuRegion] = &[
    r("eu-south-1", "AWS", "Milan, Italy"),
    r("eu-south-2", "AWS", "Aragón, Spain"),
    r("eu-central-1", "AWS", "Frankfurt, Germany"),
    r("eu-west-1", "AWS", "Dublin, Ireland"),
    r("eu-west-3", "AWS", "Paris, France"),
    r("eu-north-1", "AWS", "Stockholm, Sweden"),
    r("eusc-de-east-1", "AWS European Sovereign Cloud", "Brandenburg, Germany"),
];

/// Region names that EU S3-compatible providers use for places in the EU. A self-hosted Ceph RGW
/// reports its zonegroup's `api_name`; set it to one of these (or to an AWS name above).
pub const PROVIDERS: &[EuRegion] = &[
    r("fr-par", "Scaleway", "Paris, France"),
    r("nl-ams", "Scaleway", "Amsterdam, Netherlands"),
    r("pl-waw", "Scaleway", "Warsaw, Poland"),
    r("gra", "OVHcloud", "Gravelines, France"),
    r("sbg", "OVHcloud", "Strasbourg, France"),
    r("rbx", "OVHcloud", "Roubaix, France"),
    r("de", "OVHcloud, IONOS", "Frankfurt, Germany"),
    r("waw", "OVHcloud", "Warsaw, Poland"),
    r("eu-west-par", "OVHcloud", "Paris, France"),
    r("eu-south-mil", "OVHcloud", "Milan, Italy"),
    r("eu-central-3", "IONOS", "Frankfurt, Germany"),
    r("fsn1", "Hetzner", "Falkenstein, Germany"),
    r("nbg1", "Hetzner", "Nuremberg, Germany"),
    r("hel1", "Hetzner", "Helsinki, Finland"),
    r("de-fra-1", "Exoscale", "Frankfurt, Germany"),
    r("de-muc-1", "Exoscale", "Munich, Germany"),
    r("at-vie-1", "Exoscale", "Vienna, Austria"),
    r("at-vie-2", "Exoscale", "Vienna, Austria"),
    r("bg-sof-1", "Exoscale", "Sofia, Bulgaria"),
    r("eu-de", "Open Telekom Cloud", "Germany"),
    r("eu-nl", "Open Telekom Cloud", "Netherlands"),
    r("nl-01", "Leaseweb", "Netherlands"),
    r("de-01", "Leaseweb", "Germany"),
    r("r1-it", "Aruba Cloud", "Italy"),
    r("r1-fr", "Aruba Cloud", "France"),
    r("r1-de", "Aruba Cloud", "Germany"),
    r("r1-cz", "Aruba Cloud", "Czechia"),
    r("r1-pl", "Aruba Cloud", "Poland"),
];

/// Region names that mean a place outside the EU on one provider's hosts even though the same
/// name is in the EU elsewhere: (host suffix, region, place).
const NOT_EU_ON_HOST: &[(&str, &str, &str)] = &[("wasabisys.com", "eu-west-1", "London, United Kingdom")];

/// Whole host labels that name a non-EU location on one provider's hosts: (host suffix, label, place).
const NOT_EU_LABELS: &[(&str, &str, &str)] = &[
    ("cloud.ovh.net", "bhs", "Beauharnois, Canada"),
    ("cloud.ovh.net", "uk", "London, United Kingdom"),
    ("exo.io", "ch-gva-2", "Geneva, Switzerland"),
    ("exo.io", "ch-dk-2", "Zurich, Switzerland"),
    ("arubacloud.co.uk", "r1-uk", "United Kingdom"),
    ("cloud.gcore.lu", "s-drc2", "Chicago, United States"),
];

/// Every region name the default list allows, AWS first.
pub fn default_allowed() -> impl Iterator<Item = &'static EuRegion> {
    AWS.iter().chain(PROVIDERS.iter())
}

pub fn lookup(name: &str) -> Option<&'static EuRegion> {
    default_allowed().find(|r| r.name == name)
}

/// Whether `host` is an AWS host (where only the AWS names above mean what they say).
pub fn is_aws_host(host: &str) -> bool {
    ["amazonaws.com", "amazonaws.eu", "amazonaws.com.cn"].iter().any(|s| host == *s || host.ends_with(&format!(".{s}")))
}

/// The AWS-style region names (`us-east-1`, `eu-west-2`, `ap-south-1`, ...) that appear in a host
/// name, inside its labels too (`s3-us-west-2.amazonaws.com`, `s3.eu-west-1-dell-obs.wasabisys.com`).
pub fn aws_style_regions_in_host(host: &str) -> Vec<String> {
    const AREAS: &[&str] = &["us", "eu", "eusc", "ap", "ca", "sa", "me", "af", "il", "mx", "cn"];
    let mut found = Vec::new();
    for label in host.split('.') {
        let parts: Vec<&str> = label.split('-').collect();
        let mut i = 0;
        while i < parts.len() {
            // `area-[gov-]direction-digits`, e.g. us-east-1, us-gov-west-1, eusc-de-east-1.
            let mut j = i + 1;
            if AREAS.contains(&parts[i]) {
                if parts.get(j).is_some_and(|p| *p == "gov" || *p == "iso" || *p == "de") {
                    j += 1;
                }
                let word = parts.get(j).is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()));
                let num = parts.get(j + 1).is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
                if word && num {
                    found.push(parts[i..=j + 1].join("-"));
                    i = j + 2;
                    continue;
                }
            }
            i += 1;
        }
    }
    found
}

/// If `host` names a place outside the EU, which and where.
pub fn non_eu_in_host(host: &str, aws: bool) -> Option<(String, String)> {
    for region in aws_style_regions_in_host(host) {
        let known = if aws { AWS.iter().find(|r| r.name == region) } else { lookup(&region) };
        match known {
            None => return Some((region, "not an EU region".into())),
            Some(_) => {
                if let Some((_, _, place)) =
                    NOT_EU_ON_HOST.iter().find(|(suffix, name, _)| *name == region && host_under(host, suffix))
                {
                    return Some((region, place.to_string()));
                }
            }
        }
    }
    for (suffix, label, place) in NOT_EU_LABELS {
        if host_under(host, suffix) && host.split('.').any(|l| l == *label) {
            return Some((label.to_string(), place.to_string()));
        }
    }
    None
}

/// Whether `region` is outside the EU on this host although the name is in the list.
pub fn not_eu_on_host(host: &str, region: &str) -> Option<&'static str> {
    NOT_EU_ON_HOST.iter().find(|(suffix, name, _)| *name == region && host_under(host, suffix)).map(|(_, _, p)| *p)
}

fn host_under(host: &str, suffix: &str) -> bool {
    host == suffix || host.ends_with(&format!(".{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_aws_style_regions_in_hosts() {
        assert_eq!(aws_style_regions_in_host("s3.us-east-1.amazonaws.com"), vec!["us-east-1"]);
        assert_eq!(aws_style_regions_in_host("s3-us-west-2.amazonaws.com"), vec!["us-west-2"]);
        assert_eq!(aws_style_regions_in_host("bucket.s3.us-gov-west-1.amazonaws.com"), vec!["us-gov-west-1"]);
        assert_eq!(aws_style_regions_in_host("s3.eusc-de-east-1.amazonaws.eu"), vec!["eusc-de-east-1"]);
        assert_eq!(aws_style_regions_in_host("s3.eu-west-1-dell-obs.wasabisys.com"), vec!["eu-west-1"]);
        assert!(aws_style_regions_in_host("s3.fr-par.scw.cloud").is_empty());
        assert!(aws_style_regions_in_host("127.0.0.1").is_empty());
        assert!(aws_style_regions_in_host("storage.example.eu").is_empty());
    }

    #[test]
    fn refuses_hosts_that_name_non_eu_places() {
        assert_eq!(non_eu_in_host("s3.us-east-1.amazonaws.com", true).unwrap().0, "us-east-1");
        assert_eq!(non_eu_in_host("s3.eu-west-2.amazonaws.com", true).unwrap().0, "eu-west-2");
        assert_eq!(non_eu_in_host("s3.eu-central-2.amazonaws.com", true).unwrap().0, "eu-central-2");
        assert_eq!(non_eu_in_host("s3.eu-west-1.wasabisys.com", false).unwrap().1, "London, United Kingdom");
        assert_eq!(non_eu_in_host("s3.bhs.io.cloud.ovh.net", false).unwrap().0, "bhs");
        assert!(non_eu_in_host("s3.eu-south-1.amazonaws.com", true).is_none());
        assert!(non_eu_in_host("s3.gra.io.cloud.ovh.net", false).is_none());
        assert!(non_eu_in_host("s3.fr-par.scw.cloud", false).is_none());
        assert!(non_eu_in_host("objects.example.it", false).is_none());
    }

    #[test]
    fn the_lists_hold_no_duplicates_and_no_non_eu_aws_names() {
        let mut names: Vec<_> = default_allowed().map(|r| r.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
        for bad in ["eu-west-2", "eu-central-2", "us-east-1", "uk"] {
            assert!(lookup(bad).is_none(), "{bad}");
        }
    }
}
