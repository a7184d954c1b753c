use proto::registry::v1 as pb;
use tonic::Code;
use user_registry::Config;
use user_registry::config::CompanyConfig;

use crate::helpers::TestApp;

async fn codes(app: &TestApp) -> Vec<String> {
    let response = app
        .client
        .clone()
        .list_companies(pb::ListCompaniesRequest {})
        .await
        .unwrap()
        .into_inner();
    response.companies.into_iter().map(|c| c.code).collect()
}

fn company(code: &str) -> pb::CreateCompanyRequest {
    pb::CreateCompanyRequest {
        company: Some(pb::Company {
            code: code.into(),
            name: format!("{code} Ltd"),
        }),
    }
}

test_support::on_both_backends! {
    async fn the_default_company_exists_and_configured_ones_are_created_at_start(db) {
        let mut config = Config::local(&db.url);
        config.companies = vec![CompanyConfig { code: "usmf".into(), name: "Contoso USA".into() }];
        let app = TestApp::spawn_with(config).await;
        assert_eq!(codes(&app).await, ["DAT", "USMF"]);
    }

    async fn companies_are_created_once_and_codes_are_validated(db) {
        let app = TestApp::spawn(&db).await;
        let created = app.client.clone().create_company(company("gbsi")).await.unwrap().into_inner();
        assert_eq!(created.company.unwrap().code, "GBSI");
        let err = app.client.clone().create_company(company("GBSI")).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        let err = app.client.clone().create_company(company("TOO-LONG")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("company"), "{}", err.message());
        assert_eq!(codes(&app).await, ["DAT", "GBSI"]);
    }

    async fn users_can_be_imported_into_a_created_company(db) {
        let app = TestApp::spawn(&db).await;
        app.client.clone().create_company(company("USMF")).await.unwrap();
        let outcomes = app.import("imp", "usmf", vec![crate::helpers::member(1, "a@contoso.com")]).await.unwrap();
        assert_eq!(outcomes[0].kind(), pb::OutcomeKind::Created);
    }
}
